"""Content safety and PII: rules matched after normalisation, a streaming filter, PII detection.

normalize.py (text → matching form with an offset map back to the original), rules.py (categories of
phrases and regexes, Aho-Corasick, verdicts), stream.py (the same rules over streamed output),
config.py (safety.yaml), pii.py (IDs, phones, e-mails, cards, IPs, names; redaction).
"""
