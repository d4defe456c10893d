const tokenInput = document.getElementById('token');
tokenInput.value = sessionStorage.getItem('cascade-token') || '';
tokenInput.addEventListener('change', () => sessionStorage.setItem('cascade-token', tokenInput.value));
for (const form of document.querySelectorAll('form.invoke')) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const op = form.dataset.op;
    const out = document.getElementById('result-' + op);
    out.className = 'result';
    out.textContent = '…';
    const headers = {'Content-Type': 'application/json'};
    if (tokenInput.value) headers['Authorization'] = 'Bearer ' + tokenInput.value.trim();
    try {
      const response = await fetch('/api/v1/' + op, {method: 'POST', headers, body: form.params.value});
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) {}
      out.textContent = response.status + ' ' + response.statusText + '\n' + shown;
      if (!response.ok) out.className = 'result error';
    } catch (e) {
      out.textContent = String(e);
      out.className = 'result error';
    }
  });
}
