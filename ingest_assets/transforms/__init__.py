"""Plain pandas transforms (no dagster): clean → features → metrics for each dataset."""
