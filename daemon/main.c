/* Entry point (stub: being written). */
#include "daemon/common.h"

int main(int argc, char **argv)
{
    CM_UNUSED(argc);
    CM_UNUSED(argv);
    return 0;
}
