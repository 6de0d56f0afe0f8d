"""Measuring the method: the premise table, the router on held-out S, and the comparison of strategies over
independent draws."""
