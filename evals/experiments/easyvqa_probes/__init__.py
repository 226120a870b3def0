"""Why the bundled easy-VQA model missed yes/no questions: linear probes and a text-only check (issue #4)."""
