"""Tamper-evident history (issue 12): hash chains (``chain``), sealed heads (``seal``)
and their verification (``verify``). docs/audit.md describes the format."""
