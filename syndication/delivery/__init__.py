"""Delivery: the one exit for outbound mail (``mailer``), the transports it hands messages to (``transport``,
``smtp``), and the sender that drains the queue of digests through it (``sender``)."""
