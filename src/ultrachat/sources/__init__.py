"""Real source material for the planners: passages from local corpora (C4's shipped
``*.json.gz``, JSONL, Parquet, text, ``datasets`` folders) and entity lists built from
a Wikidata dump (``ultrachat entities build``)."""
