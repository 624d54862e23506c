"""Strata: a REST service that moves data-layer jobs through Landing → ODS → DWD → DWS → DS."""

__version__ = "0.1.0"
