"""Services: every write to the domain goes through one of these modules.

Functions take keyword-only arguments, run in ``transaction.atomic`` where they
write more than one row, and raise ``DomainError`` on anything the caller can act on.
"""
