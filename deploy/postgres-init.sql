-- The warehouse beside Dagster's own database (POSTGRES_DB), on first start of the volume.
CREATE DATABASE warehouse OWNER dagster;
