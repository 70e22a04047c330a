"""`sparkcnn predict`: raw image files on any storage scored by any model; the CNNModel transformer."""
