"""Library side of the transfer jobs (``transfer/*.py``): what every downstream job shares."""
