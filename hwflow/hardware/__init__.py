"""The hardware build: an HLS project with the weights in host-writable BRAM, board definitions,
a resource check, Vivado scripts, and the compiled C simulation of that project as a Board."""
