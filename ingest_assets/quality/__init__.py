"""Data quality: Pandera schemas (the one source of truth for rules) and the record-level split."""

import warnings

# Pandera concatenates per-check failure frames, some empty; pandas 2.x warns about a future
# dtype rule on every failing validation. It changes nothing for us; keep logs readable.
warnings.filterwarnings(
    "ignore",
    message="The behavior of DataFrame concatenation with empty or all-NA entries",
    category=FutureWarning,
)
