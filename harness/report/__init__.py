"""Reports: Allure results (labels, steps, attachments, environment, categories), timing
plots, and the per-reader summary (JSON and HTML) a vendor can hand in."""
