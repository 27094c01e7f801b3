"""Messages that come in to the service: bounces, complaints, unsubscribe requests.

``classify`` reads one message and says what it is (pure: the standard library's ``email`` and flufl.bounce);
``receiver`` takes messages from the organisation's MTA over LMTP or SMTP (aiosmtpd); ``mailbox`` fetches them from
an IMAP folder (imap-tools). The two ways in hand each message, as bytes with its envelope recipients, to one
function the caller gives; what a message does to the subscribers is the use case's business (``syndication.app``).
"""
