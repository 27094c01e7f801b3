"""Delivery: handing finished messages to the SMTP relay (``smtp``), one recipient per transaction."""
