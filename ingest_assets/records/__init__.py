"""The record path, dagster-free: connector batches in, Arrow raw batches and typed splits out.

- ``encode``: a batch of records (plain dicts, in the source's order) becomes one Arrow record
  batch of the raw table: ``_seq``, ``_record`` (the record's JSON, made once), ``_parse_error``
  and one text column per top-level field. Values no warehouse can store (NaN, infinities,
  unpaired surrogates, NUL characters) turn the record into a parse error, the same on every
  warehouse. The batch's field profile feeds schema drift, so nothing re-parses the records.
- ``split``: raw rows → valid typed rows + quarantine rows, column-wise, with the Pandera models
  as the rule book.
"""
