"""One analysis run end to end: settings -> statistics pass -> selection -> evaluation -> results folder."""
