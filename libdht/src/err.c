/* err.c: messages and names for the DHT_ERR_* codes (see dht/err.h). */
#include "dht/err.h"

const char *dht_strerror(int code) {
  switch (code) {
  case DHT_OK:
    return "success";
#define DHT__ERR_MSG(name, value, msg)                                         \
  case value:                                                                  \
    return msg;
    DHT_ERR_MAP(DHT__ERR_MSG)
#undef DHT__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *dht_errname(int code) {
  switch (code) {
  case DHT_OK:
    return "OK";
#define DHT__ERR_NAME(name, value, msg)                                        \
  case value:                                                                  \
    return #name;
    DHT_ERR_MAP(DHT__ERR_NAME)
#undef DHT__ERR_NAME
  default:
    return "UNKNOWN";
  }
}
