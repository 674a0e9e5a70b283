# The e2e test starts its server exactly as the compat test does.
# shellcheck source=../compat/server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../compat/server.sh"
