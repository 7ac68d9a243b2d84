// An out-of-tree user of an installed libmacula: the README's Node API snippet, for real.
#include <cstdio>
#include <future>

#include <boost/asio/use_future.hpp>

#include <macula/publisher.hpp>
#include <macula/rpc_client.hpp>
#include <macula/subscriber.hpp>
#include <macula/testing/local_mesh.hpp>

int main() {
  macula::testing::LocalMesh mesh({.size = 2});  // two linked nodes on loopback
  std::promise<std::string> got;
  macula::Subscriber sub(mesh[1], "sensors.#.temp", [&](const macula::Message& m) {
    static bool once = false;
    if (!once) got.set_value(std::string(m.topic()));
    once = true;
  });
  auto add = mesh[1].advertise("math.add", macula::sync_handler([](const macula::Bytes& a) {
    return macula::Bytes{static_cast<std::uint8_t>(a.at(0) + a.at(1))};
  }));
  mesh.settle();  // announcements crossed the link

  macula::Publisher pub(mesh[0]);
  auto acked = pub.async_publish("sensors.hall.temp", {19}, macula::Qos::at_least_once, boost::asio::use_future);
  if (acked.get()) return 1;
  if (got.get_future().get() != "sensors.hall.temp") return 2;
  macula::RpcClient rpc(mesh[0]);
  std::promise<macula::Bytes> sum;
  rpc.async_call("math.add", {2, 3}, [&](std::error_code ec, macula::Bytes r) { sum.set_value(ec ? macula::Bytes{} : r); });
  if (sum.get_future().get() != macula::Bytes{5}) return 3;
  std::printf("consumer: the installed C++ API works: a 2-node mesh did QoS 1 pub/sub and RPC\n");
  return 0;
}
