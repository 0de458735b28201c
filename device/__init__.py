"""Board side: Fabric deploy / run / pull against an AX630C board or the board EMULATOR."""
