"""The benchmark's figures, one module each; :mod:`lightning_prune.bench.plots` saves them.

Every ``*_figure`` function takes pyplot and the rows and returns a matplotlib ``Figure``
without saving it, so tests can count its panels, bars and markers. The pure helpers
(:mod:`.labels`, :func:`.widths.width_groups`, :func:`.style.dodge`) decide the layout.
"""
