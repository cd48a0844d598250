"""Paper reproductions: reported expectations, an ordered run plan, and the reported-vs-measured report."""
