"""goodtransfer: reproduce Zhao et al., 'What Makes Instance Discrimination Good for Transfer Learning?'."""

__version__ = "0.1.0"
