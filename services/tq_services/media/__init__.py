"""The media family: optimize-image (``media:optimize``).

``store`` reads and writes originals and variants (a local directory; ``media_root``), ``images``
does the Pillow work (orientation, metadata, resizing, encoding) and ``handlers`` ties them to
the File and FileVariant rows.
"""
