"""What a person reads: the terminal tables (``terminal``), the self-contained HTML report with its
Markdown summary (``html``) and its figures (``plots``, each captioned with its energy provenance).
May import history, analysis and the layers below."""
