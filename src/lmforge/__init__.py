"""lmforge: a private, self-hosted large-language-model stack."""

__version__ = "0.1.0"
