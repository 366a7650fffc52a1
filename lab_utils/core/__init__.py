"""The run core: paths, configs, artifacts, backend choice, ranks, progress bars, notebooks, plots."""
