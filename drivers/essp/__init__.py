"""eSSP: ITL note validators (NV9, NV10, NV200) at 9600 baud 8N2, optionally encrypted."""
