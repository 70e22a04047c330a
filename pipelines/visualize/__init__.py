"""`sparkcnn visualize`: sample grids and class counts of a split."""
