"""The three networks (RDPD, DC2, UiD), their shared blocks and the model registry.

Will hold: conv blocks, the peephole ConvLSTM cell, ASPP, the 7x7 dynamic filter written as
shifted multiply-adds, the symmetric kernel bank, and ``models.registry.get(name)``.
Must not import training, export or runtime code.
"""
