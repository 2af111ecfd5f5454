"""What machine this is: accelerator profiles (``data/accelerators.json``), device detection, which GPUs a
process may use, and machine facts recorded with every run. May import :mod:`pytest_ipw.core` only."""
