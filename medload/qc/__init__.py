"""Seeing a conversion: the views every picture shares, the notebooks' plots and the static QC page.

- :mod:`medload.qc.views`: slices reoriented for display and labelled from the affine, mask
  overlays, PNG thumbnails (numpy and Pillow);
- :mod:`medload.qc.plots`: the same views drawn with matplotlib, for notebooks;
- :mod:`medload.qc.report`: ``medload qc OUT``, a static HTML page over a whole store.

Nothing here is imported by ``import medload``.
"""
