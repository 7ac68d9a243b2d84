/* macula.h compiles on its own as strict C11 (nothing before it, nothing it forgets). */
#include "macula/macula.h"

int macula_header_alone_compiles(void) { return MACULA_OK; }
