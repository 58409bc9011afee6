# A Python 2 helper module next to the test: imported through the translating finder.
def double(values):
    out = []
    for v in values:
        out.append(v * 2L)
    print "doubled", out
    return out
