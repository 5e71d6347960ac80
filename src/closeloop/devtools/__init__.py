"""Tools for developers and evaluators: the demo, the benchmarks and the local sandboxes'
control. They wire hubs like the composition root does and may import any layer."""
