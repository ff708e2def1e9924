"""Users' data files: read into normalized records (reading), prose paragraphs of text and Markdown (prose),
seeded splits with their n-gram leakage (splitting), and JSONL written all or nothing (writing). Stdlib only, so
`adapterbench data ...` starts instantly."""
