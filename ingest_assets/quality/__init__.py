"""Data quality: Pandera schemas (the one source of truth for rules) and the record-level split."""
