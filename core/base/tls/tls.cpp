#include "core/base/tls/tls.h"

#include "core/base/module.h"

namespace cvtasks {

Tls& tls() {
  // module_symbol() loads the module once; the module makes its Tls once.
  using Get = Tls& (*)();
  static const auto get = reinterpret_cast<Get>(module_symbol("cvtasks_tls", "cvtasks_tls"));
  return get();
}

}  // namespace cvtasks
