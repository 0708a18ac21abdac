"""Operations on rendered PDFs: merge, stamps, PDF/A and e-invoices, encryption, signatures.
No Celery here."""
