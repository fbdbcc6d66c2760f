"""The profile as data: its pydantic schema, files, the predecessor's layout, queries and
text summary. Imports no torch: reading, comparing and querying a profile stays fast."""
