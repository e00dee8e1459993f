/* A registration (or a resend, or a change of contact) past the address's limit (a roaming carrier's NAT, a hotel's Wi-Fi): the API
   answers 429 naming a proof-of-work challenge (ALTCHA's first protocol: the number below
   maxNumber whose SHA-256 with the salt is the challenge). Solving it takes about a second;
   its solution, sent in X-Anjeon-Proof, admits the registration. */
(function () {
  "use strict";
  var BATCH = 2000; // digests in flight at once: one by one, the awaits cost more than the hashes

  function hex(buffer) {
    var bytes = new Uint8Array(buffer);
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return out;
  }

  function search(challenge, from) {
    var encoder = new TextEncoder();
    var last = Math.min(from + BATCH - 1, challenge.maxNumber);
    var tries = [];
    for (var n = from; n <= last; n++) {
      tries.push(crypto.subtle.digest("SHA-256", encoder.encode(challenge.salt + n)));
    }
    return Promise.all(tries).then(function (digests) {
      for (var i = 0; i < digests.length; i++) {
        if (hex(digests[i]) === challenge.challenge) return from + i;
      }
      return last >= challenge.maxNumber ? null : search(challenge, last + 1);
    });
  }

  /* The X-Anjeon-Proof value for the challenge at `path`; null when none could be had. */
  function solveProof(path) {
    if (!window.crypto || !crypto.subtle) return Promise.resolve(null);
    return window.Anjeon.api("GET", path).then(function (result) {
      var challenge = result.body;
      if (!result.ok || !challenge || challenge.algorithm !== "SHA-256") return null;
      return search(challenge, 0).then(function (number) {
        if (number === null) return null;
        return btoa(JSON.stringify({
          algorithm: challenge.algorithm,
          challenge: challenge.challenge,
          number: number,
          salt: challenge.salt,
          signature: challenge.signature,
        }));
      });
    });
  }

  /* send(headers) → the API's result; past the address's limit (a 429 naming a challenge),
     solve it and send again with the solution. `proving()` says the device is working. The
     registration, a resend and a change of contact all take one. */
  function withProof(send, proving) {
    return send({}).then(function (result) {
      if (result.status !== 429 || !result.body || !result.body.proof) return result;
      if (proving) proving();
      return solveProof(result.body.proof).then(function (solved) {
        return solved ? send({ "X-Anjeon-Proof": solved }) : result;
      });
    });
  }

  window.Anjeon.solveProof = solveProof;
  window.Anjeon.withProof = withProof;
})();
