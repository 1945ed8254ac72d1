"""Engine links: 802.1Q subinterfaces (or direct links) mirroring the router interfaces."""
