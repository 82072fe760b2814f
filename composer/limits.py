"""The bounds on input, in one place: bounded input gives bounded work.

Every file Composer reads as YAML (specs, search spaces, ladders, training configs, `--set` values) and every
architecture it builds is held to these limits before anything is expanded, allocated or trained. Going past
one is a user error naming the field and the limit; each is far above any real model or file, so a real input
never meets them, while a hostile one (a "billion laughs" alias bomb, `repeat: 1000000`, 200 nested loops, a
200,000-item list) fails in well under a second.

YAML documents (composer/yaml_source.py, checked while the document is composed, before data is built):

    MAX_DOCUMENT_BYTES   the size of one document (a spec is about 1 KB)
    MAX_YAML_NODES       values in the document with every alias written out (an alias counts each time it
                         is used, so an alias bomb stops here after a few thousand steps of work)
    MAX_YAML_DEPTH       nesting of mappings and lists

Architectures (composer/spec_parse.py, also for specs built in Python and by the scaling rules):

    MAX_NESTING          nesting of repeat / loop / parallel blocks
    MAX_LAYERS           layers run per token: repeat and loop iterations multiplied out (a layer inside
                         `repeat: 4` inside `loop: {times: 3}` counts 12), each parallel branch counted
    MAX_INTEGER          any integer field of a spec or a primitive's Config without an upper bound of its own
                         (d_model, vocab_size, times, a primitive's sizes): far above any real layer, and small
                         enough that sizes fit a tensor dimension and convert to float (composer/reader.py)

Search spaces (composer/search/space_parse.py) hold layer counts to MAX_LAYERS (the largest `n_layers` times
the largest `loop`, the number of slots), a searched integer range's ends to MAX_INTEGER, and

    MAX_GRID_POINTS      the values of one searched range (`{int: [lo, hi]}`, a float range with `step`), and
                         the combinations the `grid` strategy enumerates
    MAX_DRY_RUN_SAMPLES  candidates `composer search --dry-run --samples N` builds and prints

Ladders (scaling/ladder_parse.py) hold their seeds to [0, MAX_SEED] (numpy's seed range; a search's seed too) and

    MAX_LADDER_TRIALS    architectures x sizes x seeds x compute budgets (each size of each architecture is
                         fitted when the ladder is planned)
    MAX_BOOTSTRAP        resamples for a fit's bootstrap intervals
    MAX_PARAMS           a parameter target (also `composer scale --params` and confirm's sizes): beyond it is a
                         typo, and fitting it would take minutes
    MAX_TOKENS           a token budget (a quadrillion tokens: beyond any training run)
    MAX_FLOPS            a compute budget of an IsoFLOP ladder
"""

from __future__ import annotations

# A ground-floor module (the standard library only; see composer/fields.py): the primitives import it too.

MAX_INTEGER = 2**31 - 1

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_YAML_NODES = 20_000
MAX_YAML_DEPTH = 64

MAX_NESTING = 16
MAX_LAYERS = 4096

MAX_GRID_POINTS = 10**6
MAX_DRY_RUN_SAMPLES = 1_000

MAX_SEED = 2**32 - 1
MAX_LADDER_TRIALS = 2_000
MAX_BOOTSTRAP = 100_000
MAX_PARAMS = 10**12
MAX_TOKENS = 10**15
MAX_FLOPS = 10**30

__all__ = ["MAX_BOOTSTRAP", "MAX_DOCUMENT_BYTES", "MAX_DRY_RUN_SAMPLES", "MAX_FLOPS", "MAX_GRID_POINTS", "MAX_INTEGER",
           "MAX_LADDER_TRIALS", "MAX_LAYERS", "MAX_NESTING", "MAX_PARAMS", "MAX_SEED", "MAX_TOKENS", "MAX_YAML_DEPTH",
           "MAX_YAML_NODES"]
