# The product guide's 5-minute example; only these import lines differ from the guide.
from pdftasks import InMemoryBackend, JobPriority, PDFQueueManager, PDFService, PDFServiceConfig

# 1. Initialize backend
backend = InMemoryBackend()

# 2. Initialize PDF service
config = PDFServiceConfig(
    templates_dir='templates',
    output_dir='output'
)
pdf_service = PDFService(config)

# 3. Create queue manager
manager = PDFQueueManager(
    backend=backend,
    pdf_service=pdf_service,
    num_workers=2  # Number of concurrent workers
)

# 4. Start processing
manager.start()

# 5. Submit a job
job_id = manager.submit_job(
    template='invoice.html',
    data={'invoice_number': 'INV-001', 'total': 1500.00},
    output_filename='invoice_001.pdf',
    priority=JobPriority.HIGH
)

print(f"Job submitted: {job_id}")

# 6. Wait for completion
try:
    completed_job = manager.wait_for_job(job_id, timeout=30)
    print(f"✓ PDF generated: {completed_job.result_path}")
except TimeoutError:
    print("✗ Job timed out")
except RuntimeError as e:
    print(f"✗ Job failed: {e}")

# 7. Stop processing
manager.stop()
