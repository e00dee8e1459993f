/* The page's words in Korean and English. data-t="key" sets an element's text;
   data-t-list="key" fills it with one paragraph per item. */
(function () {
  "use strict";

  var STRINGS = {
    ko: {
      brand: "안전 · 해외안전여행 알림",
      formTitle: "해외 체류 등록",
      formIntro: "등록하시면 계신 곳에 여행경보가 발령될 때 문자나 이메일로 알려 드립니다.",
      name: "이름",
      phone: "휴대전화 번호",
      phoneHint: "예: 010-1234-5678 또는 +82 10 1234 5678 (국가번호 포함)",
      email: "이메일",
      language: "알림 언어",
      channels: "알림 받을 방법",
      sms: "문자(SMS)",
      emailChannel: "이메일",
      quietHours: "방해 금지 시간",
      quietHint: "1·2단계 경보는 현지 시각으로 이 시간이 끝난 뒤 보냅니다. 3·4단계와 특별여행주의보는 바로 보냅니다.",
      from: "시작",
      to: "끝",
      quietNone: "방해 금지 시간 없음",
      exercises: "훈련 메시지도 받기",
      exercisesHint: "재외국민 보호 훈련 때 [훈련] 표시가 붙은 메시지를 받습니다. 실제 경보는 선택과 관계없이 받습니다.",
      place: "지금 계신 곳",
      byCountry: "국가 고르기",
      byPoint: "위도·경도 입력",
      byAddress: "주소 입력",
      country: "국가",
      chooseCountry: "국가를 고르세요",
      lat: "위도",
      lon: "경도",
      usePosition: "현재 위치 사용",
      positionFailed: "현재 위치를 가져오지 못했습니다. 직접 입력해 주세요.",
      address: "주소",
      stays: "여행 일정 (선택)",
      staysHint: "앞으로 머물 국가와 기간을 추가하세요.",
      addStay: "일정 추가",
      removeStay: "일정 삭제",
      stayN: "일정 {n}",
      privacy: "개인정보 수집·이용 동의",
      privacyNotice: [
        "수집 항목: 이름, 휴대전화 번호, 이메일, 지금 계신 곳과 여행 일정. 여행경보와 안전 확인을 보내는 데에만 씁니다.",
        "연락처와 이름은 암호화하여 보관하며, 영사 담당자에게는 가려진 형태로만 보입니다.",
        "관리 토큰으로 언제든지 기록을 지울 수 있으며, 지우면 바로 삭제됩니다. 여행 일정은 여행이 끝난 뒤 삭제됩니다.",
      ],
      consent: "위 내용을 읽었으며 개인정보 수집·이용에 동의합니다.",
      submit: "등록하기",
      haveToken: "이미 등록하셨나요? 관리 토큰으로 기록 열기",
      errorsTitle: "입력한 내용을 확인해 주세요:",
      // Beside a field the API refused, in Korean (its own words are English).
      fieldErrors: {
        name: "이름을 확인해 주세요. 보이는 글자가 하나 이상 있어야 합니다.",
        phone: "휴대전화 번호를 확인해 주세요. 문자를 받을 수 있는 번호여야 합니다. 예: 010-1234-5678",
        email: "이메일 주소를 확인해 주세요. 예: name@example.com",
        consent: "개인정보 수집·이용에 동의해야 등록할 수 있습니다.",
        channels: "알림 받을 방법을 하나 이상 고르고, 그 연락처를 입력해 주세요.",
        language: "알림 언어를 골라 주세요.",
        location: "지금 계신 곳을 확인해 주세요.",
        "location.country": "지금 계신 국가를 골라 주세요.",
        "location.lat": "위도를 확인해 주세요 (-90 ~ 90).",
        "location.lon": "경도를 확인해 주세요 (-180 ~ 180).",
        stays: "여행 일정의 국가와 날짜를 확인해 주세요. 끝나는 날은 시작하는 날 이후여야 합니다.",
        quiet_hours: "방해 금지 시간을 확인해 주세요 (예: 22:00).",
      },
      codeWrong: "인증번호가 틀렸습니다. {n}번 더 입력할 수 있습니다.",
      codeVoid: "이 인증번호는 더 쓸 수 없습니다. 새 인증번호를 요청하세요.",
      noGeocoder: "이 서버는 주소로 위치를 찾지 않습니다. 국가나 위도·경도로 알려 주세요.",
      networkError: "서버에 연결하지 못했습니다. 잠시 후 다시 시도해 주세요.",
      retryAfter: "요청이 너무 많습니다. {s}초 뒤에 다시 시도해 주세요.",
      provingWork: "이 네트워크에서 요청이 많습니다. 기기에서 확인 중입니다(몇 초 걸립니다)…",
      verifyTitle: "인증번호 입력",
      tokenTitle: "관리 토큰을 지금 보관하세요",
      tokenAdvice: "이 토큰은 한 번만 보여 드립니다. 기록을 고치거나 지우는 유일한 방법이니 안전한 곳에 적어 두세요. 이 브라우저 탭을 닫으면 다시 볼 수 없습니다.",
      recordId: "등록 번호",
      manageToken: "관리 토큰",
      verifyIntro: "받으신 6자리 인증번호를 입력하세요. 인증번호는 10분 동안 유효합니다. 인증된 연락처로만 경보를 보냅니다. 문자 인증번호가 오지 않나요? 예전에 저희 문자에 STOP(수신거부)으로 답하셨다면, 그 번호로 START를 보내신 뒤 새 인증번호를 받으세요.",
      codeFor: "{channel} 인증번호",
      verify: "인증",
      resend: "다시 보내기",
      resent: "새 인증번호를 보냈습니다.",
      verified: "인증되었습니다.",
      statusActive: "등록이 완료되었습니다. 상태: 활성",
      statusPending: "아직 활성화되지 않았습니다. 보내 드린 인증번호를 입력하세요.",
      toManage: "내 기록 관리",
      openTitle: "내 기록 열기",
      openIntro: "등록할 때 받은 등록 번호와 관리 토큰을 입력하세요.",
      open: "열기",
      newRegistration: "새로 등록하기",
      manageTitle: "내 기록",
      status: "상태",
      statusValue: { active: "활성", pending: "인증 대기" },
      verifiedChannels: "인증된 연락처",
      pendingChannels: "인증 대기 연락처",
      currentPlace: "지금 계신 곳",
      trips: "여행 일정",
      none: "없음",
      enterCodes: "인증번호 입력",
      editTitle: "정보 고치기",
      save: "저장",
      saved: "저장했습니다.",
      nothingChanged: "바뀐 내용이 없습니다.",
      addTripTitle: "여행 일정 추가",
      addTrip: "일정 추가",
      tripAdded: "일정을 추가했습니다.",
      mapHint: "지도를 누르면 그곳의 위도와 경도가 입력됩니다.",
      moveTitle: "지금 계신 곳 바꾸기",
      moveByCountry: "국가로",
      moveByPoint: "위도·경도 또는 지도로",
      move: "위치 저장",
      moved: "지금 계신 곳을 바꿨습니다.",
      eraseTitle: "기록 삭제",
      eraseIntro: "이름, 연락처, 위치와 일정이 바로 지워지고 더 이상 알림을 받지 않습니다.",
      erase: "기록 삭제",
      eraseConfirm: "정말 지우시겠습니까? 되돌릴 수 없습니다.",
      eraseYes: "네, 지웁니다",
      cancel: "취소",
      erasedTitle: "기록을 삭제했습니다",
      erasedText: "개인정보가 모두 지워졌습니다. 더 이상 알림을 보내지 않습니다.",
      notFound: "기록을 찾을 수 없거나 토큰이 맞지 않습니다.",
    },
    en: {
      brand: "Anjeon · travel-safety alerts",
      formTitle: "Register your stay abroad",
      formIntro: "Register and we alert you by SMS or e-mail when a travel advisory is issued where you are.",
      name: "Name",
      phone: "Mobile phone",
      phoneHint: "e.g. 010-1234-5678, or +82 10 1234 5678 with the country code",
      email: "E-mail",
      language: "Language of alerts",
      channels: "Alert me by",
      sms: "SMS",
      emailChannel: "E-mail",
      quietHours: "Quiet hours",
      quietHint: "Level 1-2 alerts wait until these hours end, in local time. Levels 3, 4 and special advisories go at once.",
      from: "From",
      to: "To",
      quietNone: "No quiet hours",
      exercises: "Also receive drills",
      exercisesHint: "During citizen-protection drills you get messages marked [EXERCISE]. Real alerts reach you either way.",
      place: "Where you are now",
      byCountry: "By country",
      byPoint: "By latitude and longitude",
      byAddress: "By address",
      country: "Country",
      chooseCountry: "Choose a country",
      lat: "Latitude",
      lon: "Longitude",
      usePosition: "Use my position",
      positionFailed: "Your position is not available. Please type it.",
      address: "Address",
      stays: "Trips (optional)",
      staysHint: "Add the countries where you will stay, and when.",
      addStay: "Add a trip",
      removeStay: "Remove trip",
      stayN: "Trip {n}",
      privacy: "Privacy notice and consent",
      privacyNotice: [
        "We store your name, phone number, e-mail address, where you are and your trips, only to send travel advisories and safety check-ins.",
        "Your name and contacts are sealed (encrypted); consular staff see them masked.",
        "You can erase your record at any time with your manage token: it is deleted at once. Trips are deleted after they end.",
      ],
      consent: "I have read this notice and agree that my data is stored for these alerts.",
      submit: "Register",
      haveToken: "Already registered? Open your record with the manage token",
      errorsTitle: "Please check:",
      networkError: "The server could not be reached. Please try again shortly.",
      retryAfter: "Too many requests. Please try again in {s} seconds.",
      provingWork: "Many requests come from this network. Your device is checking (a few seconds)…",
      verifyTitle: "Enter your codes",
      tokenTitle: "Keep your manage token now",
      tokenAdvice: "It is shown only once. It is the only way to change or erase your record: write it down somewhere safe. Once this tab is closed it cannot be shown again.",
      recordId: "Record id",
      manageToken: "Manage token",
      verifyIntro: "Type the 6-digit code we sent. Each code is valid for 10 minutes. Alerts go only to verified contacts. No SMS code? If you ever replied STOP to our texts, text START to the number that sent them, then send a new code.",
      codeFor: "{channel} code",
      verify: "Verify",
      resend: "Send a new code",
      resent: "A new code is on its way.",
      verified: "Verified.",
      statusActive: "You are registered. Status: active",
      statusPending: "Not active yet: enter the code we sent you.",
      toManage: "Manage my record",
      openTitle: "Open your record",
      openIntro: "Type the record id and manage token you got when you registered.",
      open: "Open",
      newRegistration: "Register again",
      manageTitle: "Your record",
      status: "Status",
      statusValue: { active: "active", pending: "waiting for a code" },
      verifiedChannels: "Verified contacts",
      pendingChannels: "Contacts waiting for a code",
      currentPlace: "Where you are",
      trips: "Trips",
      none: "none",
      enterCodes: "Enter codes",
      editTitle: "Change your details",
      save: "Save",
      saved: "Saved.",
      nothingChanged: "Nothing changed.",
      addTripTitle: "Add a trip",
      addTrip: "Add trip",
      tripAdded: "Trip added.",
      mapHint: "Or click the map: it fills in the latitude and longitude of that spot.",
      moveTitle: "Move your current place",
      moveByCountry: "A country",
      moveByPoint: "A latitude and longitude, or a spot on the map",
      move: "Save the place",
      moved: "Your current place is changed.",
      eraseTitle: "Erase your record",
      eraseIntro: "Your name, contacts, place and trips are deleted at once, and you get no more alerts.",
      erase: "Erase my record",
      eraseConfirm: "Erase it for good? This cannot be undone.",
      eraseYes: "Yes, erase",
      cancel: "Cancel",
      erasedTitle: "Your record is erased",
      erasedText: "Your personal data is deleted. You will get no more alerts.",
      notFound: "No such record, or the token does not match.",
    },
  };

  var current = "ko";

  function t(key, vars) {
    var text = STRINGS[current][key];
    if (text === undefined) text = STRINGS.en[key];
    if (typeof text === "string" && vars) {
      Object.keys(vars).forEach(function (name) {
        text = text.replace("{" + name + "}", vars[name]);
      });
    }
    return text;
  }

  function apply(root) {
    (root || document).querySelectorAll("[data-t]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-t"));
    });
    (root || document).querySelectorAll("[data-t-list]").forEach(function (el) {
      el.textContent = "";
      t(el.getAttribute("data-t-list")).forEach(function (line) {
        var p = document.createElement("p");
        p.textContent = line;
        el.appendChild(p);
      });
    });
  }

  function setLanguage(language) {
    current = language === "en" ? "en" : "ko";
    document.documentElement.lang = current;
    var toggle = document.getElementById("ui-language");
    if (toggle) {
      toggle.textContent = current === "ko" ? "English" : "한국어";
      toggle.lang = current === "ko" ? "en" : "ko";
    }
    apply(document);
    document.dispatchEvent(new CustomEvent("anjeon:language"));
  }

  function initial() {
    var preferred = (navigator.language || "ko").toLowerCase();
    return preferred.indexOf("ko") === 0 ? "ko" : "en";
  }

  window.I18N = {
    t: t,
    apply: apply,
    setLanguage: setLanguage,
    initial: initial,
    language: function () { return current; },
  };
})();
