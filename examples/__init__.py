"""Examples of a user's own GAN plugged into gan-search by import path."""
