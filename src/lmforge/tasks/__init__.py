"""NLP tasks on any model: `lmforge task` (engine.py; prompt templates in templates.yaml)."""
