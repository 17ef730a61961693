"""Fleet and rollout reports: Markdown and a self-contained HTML page with inline SVG charts."""
