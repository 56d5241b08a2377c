"""rec: predict what a person clicks next and recommend it."""

__version__ = "0.1.0"
