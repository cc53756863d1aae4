"""The bottom layer: the shared vocabulary every other package may import (events, customers,
their types). It imports nothing of the project."""
