"""JivaPay: P2P payment processing (PayIn and PayOut routed through traders' bank requisites)."""

__version__ = "0.1.0"
