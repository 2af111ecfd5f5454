"""The defaults that several layers share, defined once (and cheap to import: the plugin reads them at start-up)."""

#: sampling rate of power gauges, Hz (never faster than the sensor updates)
SAMPLE_HZ = 20.0
#: saved runs live in this folder of pytest's rootdir (like .pytest_cache), unless --ipw-storage says otherwise
STORAGE_DIR = ".ipw"

# generation: deterministic by default, like the study
TEMPERATURE = 0.0
SEED = 0
MAX_TOKENS = 256  # the embedded model ends all 363 shipped answers within it (longest: 162 tokens)
CONTEXT_SIZE = 2048
BATCH_SIZE = 1  # queries per engine call; only batching backends (vllm) accept more
REQUEST_TIMEOUT_S = 120.0  # HTTP backends: per request, connect and each read
RETRIES = 4  # HTTP backends: extra tries after a connection failure or HTTP 429/5xx (back-off waits of up to 1, 2, 4, 8 s)
API_KEY_ENV = "OPENAI_API_KEY"  # the variable's *name* is recorded, never its value
