"""``python -m keras_gradwatch report LOGDIR``: the ``gradwatch`` command."""

import sys

from keras_gradwatch._cli import main

if __name__ == "__main__":
    sys.exit(main())
